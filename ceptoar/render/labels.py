"""How mail and pages name severities and categories, in each language."""

from __future__ import annotations

from typing import Final

from ceptoar.model.notice import Category

__all__ = ["CATEGORY_NAMES", "SEVERITY_LABELS"]

SEVERITY_LABELS: Final[dict[str, dict[str, str]]] = {
    "ja": {"critical": "【緊急】", "high": "【重要】", "medium": "【注意】", "low": "【情報】"},
    "en": {"critical": "[CRITICAL]", "high": "[HIGH]", "medium": "[MEDIUM]", "low": "[INFO]"},
}
CATEGORY_NAMES: Final[dict[str, dict[str, str]]] = {
    "ja": {
        Category.ATTACK: "サイバー攻撃",
        Category.VULNERABILITY: "脆弱性",
        Category.MALWARE: "マルウェア",
        Category.PHISHING: "フィッシング",
        Category.OUTAGE: "システム障害",
        Category.ADVISORY: "注意喚起",
        Category.OTHER: "その他",
    },
    "en": {c: c.value.capitalize() for c in Category},
}
