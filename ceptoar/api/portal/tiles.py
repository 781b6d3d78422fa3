"""Japan as a tile map: one square per prefecture, in the grid position it usually has.

North-east at the top right (Hokkaido), Kyushu at the bottom left and
Okinawa below it; neighbours stay beside each other where a square grid
allows. Columns 0-12, rows 0-8.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COLUMNS", "ROWS", "TILES", "share_class"]

# Prefecture number: (column, row).
TILES: Final[dict[str, tuple[int, int]]] = {
    "01": (12, 0),
    "02": (12, 1),
    "05": (11, 2), "03": (12, 2),
    "17": (8, 3), "16": (9, 3), "15": (10, 3), "06": (11, 3), "04": (12, 3),
    "32": (3, 4), "31": (4, 4), "28": (5, 4), "26": (6, 4), "18": (7, 4),
    "21": (8, 4), "20": (9, 4), "10": (10, 4), "09": (11, 4), "07": (12, 4),
    "42": (0, 5), "41": (1, 5), "40": (2, 5), "35": (3, 5), "34": (4, 5), "33": (5, 5),
    "27": (6, 5), "25": (7, 5), "23": (8, 5), "19": (9, 5), "11": (10, 5), "08": (11, 5),
    "43": (1, 6), "44": (2, 6), "38": (4, 6), "37": (5, 6), "30": (6, 6), "29": (7, 6),
    "24": (8, 6), "22": (9, 6), "13": (10, 6), "12": (11, 6),
    "46": (1, 7), "45": (2, 7), "39": (4, 7), "36": (5, 7), "14": (10, 7),
    "47": (0, 8),
}  # fmt: skip
COLUMNS: Final = 13
ROWS: Final = 9


def share_class(answered: int, total: int) -> str:
    """The tile's colour class: `none` without organisations, else `s0`..`s10` by tenths answered."""
    if total <= 0:
        return "none"
    return f"s{answered * 10 // total}"
