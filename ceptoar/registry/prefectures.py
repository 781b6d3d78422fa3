"""The 47 prefectures: number, name, short name and English name.

From `prefjp-utf8.csv` (code4fukui/localgovjp, CC0), so operators can name a
prefecture instead of its number.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PREFECTURES", "PREFECTURE_NAMES", "Prefecture"]


class Prefecture(NamedTuple):
    """One prefecture."""

    number: str
    name: str
    short: str
    english: str


PREFECTURES: tuple[Prefecture, ...] = (
    Prefecture("01", "北海道", "北海道", "Hokkaido"),
    Prefecture("02", "青森県", "青森", "Aomori"),
    Prefecture("03", "岩手県", "岩手", "Iwate"),
    Prefecture("04", "宮城県", "宮城", "Miyagi"),
    Prefecture("05", "秋田県", "秋田", "Akita"),
    Prefecture("06", "山形県", "山形", "Yamagata"),
    Prefecture("07", "福島県", "福島", "Fukushima"),
    Prefecture("08", "茨城県", "茨城", "Ibaraki"),
    Prefecture("09", "栃木県", "栃木", "Tochigi"),
    Prefecture("10", "群馬県", "群馬", "Gunma"),
    Prefecture("11", "埼玉県", "埼玉", "Saitama"),
    Prefecture("12", "千葉県", "千葉", "Chiba"),
    Prefecture("13", "東京都", "東京", "Tokyo"),
    Prefecture("14", "神奈川県", "神奈川", "Kanagawa"),
    Prefecture("15", "新潟県", "新潟", "Niigata"),
    Prefecture("16", "富山県", "富山", "Toyama"),
    Prefecture("17", "石川県", "石川", "Ishikawa"),
    Prefecture("18", "福井県", "福井", "Fukui"),
    Prefecture("19", "山梨県", "山梨", "Yamanashi"),
    Prefecture("20", "長野県", "長野", "Nagano"),
    Prefecture("21", "岐阜県", "岐阜", "Gifu"),
    Prefecture("22", "静岡県", "静岡", "Shizuoka"),
    Prefecture("23", "愛知県", "愛知", "Aichi"),
    Prefecture("24", "三重県", "三重", "Mie"),
    Prefecture("25", "滋賀県", "滋賀", "Shiga"),
    Prefecture("26", "京都府", "京都", "Kyoto"),
    Prefecture("27", "大阪府", "大阪", "Osaka"),
    Prefecture("28", "兵庫県", "兵庫", "Hyogo"),
    Prefecture("29", "奈良県", "奈良", "Nara"),
    Prefecture("30", "和歌山県", "和歌山", "Wakayama"),
    Prefecture("31", "鳥取県", "鳥取", "Tottori"),
    Prefecture("32", "島根県", "島根", "Shimane"),
    Prefecture("33", "岡山県", "岡山", "Okayama"),
    Prefecture("34", "広島県", "広島", "Hiroshima"),
    Prefecture("35", "山口県", "山口", "Yamaguchi"),
    Prefecture("36", "徳島県", "徳島", "Tokushima"),
    Prefecture("37", "香川県", "香川", "Kagawa"),
    Prefecture("38", "愛媛県", "愛媛", "Ehime"),
    Prefecture("39", "高知県", "高知", "Kochi"),
    Prefecture("40", "福岡県", "福岡", "Fukuoka"),
    Prefecture("41", "佐賀県", "佐賀", "Saga"),
    Prefecture("42", "長崎県", "長崎", "Nagasaki"),
    Prefecture("43", "熊本県", "熊本", "Kumamoto"),
    Prefecture("44", "大分県", "大分", "Oita"),
    Prefecture("45", "宮崎県", "宮崎", "Miyazaki"),
    Prefecture("46", "鹿児島県", "鹿児島", "Kagoshima"),
    Prefecture("47", "沖縄県", "沖縄", "Okinawa"),
)

# A prefecture's name by its two-digit number.
PREFECTURE_NAMES: dict[str, str] = {p.number: p.name for p in PREFECTURES}
