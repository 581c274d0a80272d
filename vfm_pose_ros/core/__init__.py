"""ROS-free, torch-free core: geometry, metrics, catalogue. numpy + scipy only."""
