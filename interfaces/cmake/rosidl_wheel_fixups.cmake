# Fix-ups for building interface packages against ROS 2 from PyPI wheels (ros-* packages).
#
# Some wheels export the include path of their build machine
# (/opt/python/cp311-cp311/include/python3.11 and its NumPy include) on their
# imported `<pkg>::<pkg>__rosidl_generator_py` targets; CMake refuses imported
# targets with non-existent include directories. Call rosidl_wheel_fixups()
# after rosidl_generate_interfaces(): every imported *__rosidl_generator_py
# target whose include directories do not all exist gets this machine's Python
# and NumPy include directories instead. On a real ROS 2 install every path
# exists and nothing changes.

function(rosidl_wheel_fixups)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
  get_directory_property(_imported IMPORTED_TARGETS)
  foreach(_target IN LISTS _imported)
    if(NOT _target MATCHES "__rosidl_generator_py$")
      continue()
    endif()
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_stale FALSE)
    foreach(_dir IN LISTS _dirs)
      if(NOT EXISTS "${_dir}")
        set(_stale TRUE)
      endif()
    endforeach()
    if(_stale)
      message(STATUS "rosidl_wheel_fixups: ${_target}: include dirs -> ${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
      set_target_properties(${_target} PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
    endif()
  endforeach()
endfunction()
