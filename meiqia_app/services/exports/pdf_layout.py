"""What every exported PDF needs from reportlab besides its tables: a footer
that knows the page count ("第 3 页 / 共 12 页", "Page 3 of 12") and table
cells that wrap inside their column instead of running into the next one.

The page count: platypus lays the document out page by page and draws each
footer before it knows how many pages follow. Each page therefore draws its
own part of the label and a reference to a PDF form XObject that the canvas
defines once, when the file is saved, holding the total. No second layout
pass, and nothing of the finished pages kept in memory (the customer export
streams up to tens of thousands of rows).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

TOTAL_FORM = "mqPageTotal"
#: The widest total the footer leaves room for (the label stays right-aligned up to 99,999 pages).
TOTAL_ROOM = "00000"
ELLIPSIS = "…"


class PageLabel:
    """A footer label from a template with ``{page}`` and ``{pages}``.

    ``canvasmaker`` goes to ``doc.build(..., canvasmaker=label.canvasmaker)``;
    ``draw(canvas, page, x_right, y)`` from the page callback.
    """

    def __init__(self, template: str, font: str, size: float) -> None:
        self.font, self.size = font, size
        head, found, tail = template.partition("{pages}")
        self.head = head
        self.tail = tail if found else ""
        self.counted = bool(found)
        label = self

        class _CountingCanvas(Canvas):
            def save(self) -> None:  # noqa: D102 - reportlab's
                if label.counted:
                    # Pages shown so far, plus the one being drawn if it has content.
                    total = self.getPageNumber() - (0 if self._code else 1)
                    label._define_total(self, max(total, 1))
                super().save()

        self.canvasmaker = _CountingCanvas

    def _define_total(self, canvas: Canvas, total: int) -> None:
        text = f"{total}{self.tail}"
        width = stringWidth(text, self.font, self.size)
        canvas.beginForm(TOTAL_FORM, lowerx=0, lowery=-self.size, upperx=width + self.size, uppery=self.size * 2)
        canvas.setFont(self.font, self.size)
        canvas.drawString(0, 0, text)
        canvas.endForm()

    def draw(self, canvas: Canvas, page: int, x_right: float, y: float) -> None:
        canvas.saveState()
        canvas.setFont(self.font, self.size)
        head = self.head.format(page=page)
        if not self.counted:
            canvas.drawRightString(x_right, y, head)
        else:
            x = x_right - stringWidth(TOTAL_ROOM + self.tail, self.font, self.size)
            canvas.drawRightString(x, y, head)
            canvas.translate(x, y)
            canvas.doForm(TOTAL_FORM)
        canvas.restoreState()


def fit_text(text: str, width: float, font: str, size: float) -> str:
    """``text`` cut (with an ellipsis) to at most ``width`` points on one line."""
    if stringWidth(text, font, size) <= width:
        return text
    room = width - stringWidth(ELLIPSIS, font, size)
    used = 0.0
    for index, char in enumerate(text):
        used += stringWidth(char, font, size)
        if used > room:
            return text[:index] + ELLIPSIS
    return text


class CellWrapper:
    """Table cells that fit their column: a short text stays a plain string (fast),
    a longer one becomes a Paragraph that wraps inside the column (CJK rules:
    a line may break between any two characters), cut after ``max_lines``."""

    def __init__(self, font: str, size: float, leading: float, padding: float, max_lines: int = 6) -> None:
        from reportlab.lib.enums import TA_RIGHT
        from reportlab.lib.styles import ParagraphStyle

        self.font, self.size, self.padding, self.max_lines = font, size, padding, max_lines
        self.left = ParagraphStyle("cell", fontName=font, fontSize=size, leading=leading, wordWrap="CJK")
        self.right = ParagraphStyle("cell_right", parent=self.left, alignment=TA_RIGHT)

    def cell(self, text: str, column_width: float, right: bool = False):
        inner = column_width - 2 * self.padding
        if stringWidth(text, self.font, self.size) <= inner:
            return text
        from reportlab.platypus import Paragraph

        # One line short of the limit: wrapping at character boundaries wastes part of each line.
        text = fit_text(text, inner * (self.max_lines - 1), self.font, self.size)
        return Paragraph(escape(text), self.right if right else self.left)
