"""Label spaces of the released data, and how synthetic objects and rooms map into them.

- Semantic labels: the authors' ``coco_selected_classes.txt`` (StanfordVL/taskonomy,
  ``taskbank/assets/web_assets/pseudosemantics``) lists ``background`` then 16 COCO classes; the
  label PNG stores ``1 + line index`` (1 = background, 2 = bottle, ..., 17 = vase) and 0 for
  "uncertain". The authors' list has ``bottle`` and no ``teddy bear``.
- Objects: each class maps to a few plausible ImageNet-1k indices (weights sum to 1), which is how
  the synthetic ``class_object`` distribution is derived from the visible objects.
- Scenes: room types map to Places365 indices inside the authors' 63 home/workspace classes
  (``load_ops.class_places_workspace_and_home``, shipped in ``places365.json``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

#: Semantic label names; the label value of ``SEMANTIC_CLASSES[i]`` is ``i + 1`` (0 = uncertain).
SEMANTIC_CLASSES: tuple[str, ...] = (
    "background", "bottle", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
)
#: Label value for pixels whose class is uncertain.
UNCERTAIN = 0
#: Label value for background (walls, floor, ceiling, unlabelled furniture).
BACKGROUND = 1


def semantic_label(name: str) -> int:
    """Label value of a semantic class name; the error lists the valid names."""
    if name not in SEMANTIC_CLASSES:
        raise ValueError(f"unknown semantic class {name!r}; valid: {', '.join(SEMANTIC_CLASSES)}")
    return SEMANTIC_CLASSES.index(name) + 1


#: ImageNet-1k indices (and names) per semantic class: (index, weight) pairs.
IMAGENET_FOR_CLASS: dict[str, tuple[tuple[int, float], ...]] = {
    "bottle": ((898, 0.5), (907, 0.3), (440, 0.2)),
    "chair": ((559, 0.5), (765, 0.3), (423, 0.2)),
    "couch": ((831, 1.0),),
    "potted plant": ((738, 1.0),),
    "bed": ((564, 0.6), (831, 0.2), (750, 0.2)),
    "dining table": ((532, 0.8), (526, 0.2)),
    "toilet": ((861, 1.0),),
    "tv": ((851, 0.6), (664, 0.2), (782, 0.2)),
    "microwave": ((651, 1.0),),
    "oven": ((827, 0.6), (766, 0.4)),
    "toaster": ((859, 1.0),),
    "sink": ((896, 0.8), (876, 0.2)),
    "refrigerator": ((760, 1.0),),
    "book": ((921, 0.6), (453, 0.4)),
    "clock": ((409, 0.5), (892, 0.5)),
    "vase": ((883, 1.0),),
}
#: ImageNet indices standing for the room shell (window shades, sliding doors, wardrobes).
IMAGENET_BACKGROUND: tuple[tuple[int, float], ...] = ((905, 0.4), (799, 0.3), (894, 0.3))
#: Names of the ImageNet indices used above (for contact sheets).
IMAGENET_NAMES: dict[int, str] = {
    409: "analog clock", 423: "barber chair", 440: "beer bottle", 453: "bookcase", 526: "desk",
    532: "dining table", 559: "folding chair", 564: "four-poster", 651: "microwave",
    664: "monitor", 738: "pot", 750: "quilt", 760: "refrigerator", 765: "rocking chair",
    766: "rotisserie", 782: "screen", 799: "sliding door", 827: "stove", 831: "studio couch",
    851: "television", 859: "toaster", 861: "toilet seat", 876: "tub", 883: "vase",
    892: "wall clock", 894: "wardrobe", 896: "washbasin", 898: "water bottle", 905: "window shade",
    907: "wine bottle", 921: "book jacket",
}

#: Room types: Places365 indices (index, weight) of the scene distribution, and the furniture
#: classes that may appear (other than the ones every room can hold).
ROOM_TYPES: dict[str, dict[str, tuple]] = {
    "living_room": {"places": ((215, 0.7), (328, 0.2), (177, 0.1)),
                    "furniture": ("couch", "chair", "tv", "potted plant", "dining table", "clock",
                                  "vase", "book")},
    "bedroom": {"places": ((52, 0.7), (51, 0.15), (182, 0.15)),
                "furniture": ("bed", "chair", "clock", "book", "potted plant", "tv", "vase")},
    "kitchen": {"places": ((203, 0.8), (253, 0.1), (285, 0.1)),
                "furniture": ("refrigerator", "oven", "microwave", "toaster", "sink",
                              "dining table", "chair", "bottle", "vase")},
    "dining_room": {"places": ((121, 0.8), (203, 0.1), (215, 0.1)),
                    "furniture": ("dining table", "chair", "vase", "bottle", "clock",
                                  "potted plant")},
    "bathroom": {"places": ((45, 0.8), (303, 0.2)),
                 "furniture": ("toilet", "sink", "bottle", "potted plant", "vase")},
    "home_office": {"places": ((176, 0.6), (244, 0.3), (100, 0.1)),
                    "furniture": ("dining table", "chair", "tv", "book", "clock", "potted plant",
                                  "bottle")},
    "conference_room": {"places": ((102, 0.8), (244, 0.2)),
                        "furniture": ("dining table", "chair", "tv", "clock", "bottle",
                                      "potted plant")},
}


@lru_cache(maxsize=1)
def _places_data() -> dict:
    text = resources.files(__package__).joinpath("places365.json").read_text()
    return dict(json.loads(text))


def places365_categories() -> list[str]:
    """The 365 Places365 category names in index order."""
    return list(_places_data()["categories"])


def places_home_workspace_mask() -> np.ndarray:
    """Boolean mask (365,) of the authors' 63 home/workspace Places365 classes."""
    mask = np.zeros(365, dtype=bool)
    mask[_places_data()["home_workspace"]] = True
    return mask


def room_type(name: str) -> dict[str, tuple]:
    """The definition of a room type; the error lists the valid names."""
    if name not in ROOM_TYPES:
        raise ValueError(f"unknown room type {name!r}; valid: {', '.join(ROOM_TYPES)}")
    return ROOM_TYPES[name]


def scene_distribution(room: str, smoothing: float = 0.05) -> np.ndarray:
    """365-way Places365 distribution of a room type (float32, sums to 1).

    The room's classes get ``1 − smoothing`` of the mass; the rest is spread uniformly over the
    63 home/workspace classes, so a renormalized 63-way target never has zeros.
    """
    distribution = np.zeros(365, dtype=np.float64)
    for index, weight in room_type(room)["places"]:
        distribution[index] += (1.0 - smoothing) * weight
    mask = places_home_workspace_mask()
    distribution[mask] += smoothing / mask.sum()
    return (distribution / distribution.sum()).astype(np.float32)


def object_distribution(class_areas: dict[str, float], smoothing: float = 0.02) -> np.ndarray:
    """1000-way ImageNet distribution from the image area of each visible semantic class.

    Args:
        class_areas: Visible area (any unit) per semantic class name; ``background`` stands for
            the room shell.
        smoothing: Mass spread uniformly over all 1000 classes.

    Returns:
        A float32 probability vector of length 1000.
    """
    # Objects count more than the shell per pixel: a classifier names the salient thing.
    weighted = {
        name: area * (0.05 if name == "background" else 1.0)
        for name, area in class_areas.items()
        if area > 0
    }
    total = sum(weighted.values())
    if total <= 0:
        return np.full(1000, 1.0 / 1000.0, dtype=np.float32)
    distribution = np.full(1000, smoothing / 1000.0)
    for name, area in weighted.items():
        pairs = IMAGENET_BACKGROUND if name == "background" else IMAGENET_FOR_CLASS[name]
        for index, weight in pairs:
            distribution[index] += (1.0 - smoothing) * area / total * weight
    return (distribution / distribution.sum()).astype(np.float32)
