"""Locate and register the CJK TrueType font that exported PDFs embed.

Why a shipped TrueType font: reportlab's built-in CID font ``STSong-Light`` is
not embedded, and poppler (and any viewer without that font) draws it as empty
boxes. WenQuanYi Micro Hei has TrueType outlines, so reportlab and xhtml2pdf
can subset and embed it, and the embedded subsets carry a ToUnicode map so the
text stays searchable and extractable. (Noto CJK has CFF outlines, which
reportlab cannot embed.)

The font ships in ``assets/fonts/`` with its licence (Apache-2.0 or GPL-3+
with the font-embedding exception).
"""

from __future__ import annotations

import threading
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

#: The name reportlab knows the font by once registered.
CJK_FONT_NAME = "WenQuanYiMicroHei"
CJK_FONT_FILE_NAME = "wqy-microhei.ttc"
#: A .ttc holds two faces: 0 is the proportional "WenQuanYi Micro Hei",
#: 1 the monospaced "WenQuanYi Micro Hei Mono".
CJK_SUBFONT_INDEX = 0

#: <repo>/assets/fonts, where the font is shipped with the application.
PROJECT_FONTS_DIR = Path(__file__).resolve().parents[3] / "assets" / "fonts"
#: Debian's fonts-wqy-microhei, used only when the shipped copy is missing
#: (e.g. a checkout without the binary asset).
SYSTEM_FONT_PATH = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

_registration_lock = threading.Lock()


class CJKFontNotFound(RuntimeError):
    """Neither the shipped font nor the system copy exists."""


def cjk_font_path() -> Path:
    """Absolute path of the CJK font file, preferring the shipped copy."""
    for candidate in (PROJECT_FONTS_DIR / CJK_FONT_FILE_NAME, SYSTEM_FONT_PATH):
        if candidate.is_file():
            return candidate
    raise CJKFontNotFound(f"{CJK_FONT_FILE_NAME} not found in {PROJECT_FONTS_DIR} or at {SYSTEM_FONT_PATH}")


def register_cjk_font() -> str:
    """Register the CJK font with reportlab once per process; return its name.

    Parsing the 5 MB collection takes ~0.5 s, so it is done only on first use
    and guarded by a lock because export jobs may run in threads.
    """
    with _registration_lock:
        if CJK_FONT_NAME not in pdfmetrics.getRegisteredFontNames():
            font = TTFont(CJK_FONT_NAME, str(cjk_font_path()), subfontIndex=CJK_SUBFONT_INDEX)
            pdfmetrics.registerFont(font)
    return CJK_FONT_NAME
