"""Everyday object names that are *not* the catalogue's: the prompt resolver's open-set rejection.

A prompt closer to one of these ("a wrench", "the red ball") than to any catalogue object is refused even when its
similarity to a catalogue object clears the threshold. Entries too close to a catalogue object's own texts are
dropped when the resolver starts, so a catalogue holding a mug is not refused by "mug". The list: the COCO object
classes plus common household items, tools, toys, food and containers.
"""
EVERYDAY_OBJECTS = (
    # COCO
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote control", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
    # tools and workshop
    "hammer", "wrench", "spanner", "pliers", "saw", "hand saw", "tape measure", "level", "chisel", "file",
    "clamp", "glue gun", "soldering iron", "multimeter", "flashlight", "screw", "nail", "bolt", "nut", "washer",
    "allen key", "utility knife", "paint brush", "paint roller", "bucket", "ladder", "toolbox", "extension cord",
    "cable", "rope", "tape", "stapler", "ruler", "pencil", "pen", "marker", "eraser", "notebook", "paper",
    "envelope", "folder", "calculator", "headphones", "charger", "battery", "light bulb", "camera", "tablet",
    "monitor", "printer", "speaker", "game controller",
    # kitchen, food and containers
    "mug", "plate", "glass", "jar", "pot", "pan", "kettle", "teapot", "thermos", "lunch box", "cutting board",
    "spatula", "whisk", "ladle", "tray", "bottle of water", "milk carton", "juice box", "cereal box",
    "cardboard box", "shoe box", "plastic bag", "paper bag", "basket", "lemon", "lime", "pear", "peach", "grapes",
    "strawberry", "tomato", "potato", "onion", "cucumber", "bread", "cheese", "egg", "cookie", "chocolate bar",
    # household and personal
    "ball", "tennis ball", "football", "toy car", "doll", "building block", "lego brick", "rubber duck", "shoe",
    "sock", "hat", "glove", "towel", "pillow", "blanket", "lamp", "candle", "plant", "flower", "houseplant",
    "sponge", "brush", "comb", "soap", "toothpaste", "shampoo bottle", "spray bottle", "wallet", "keys", "key",
    "phone", "smartphone", "watch", "glasses", "sunglasses", "coin", "card", "box", "stone", "stick", "wood block",
)
