"""AES-256 password protection of finished export files.

- XLSX: Office agile encryption (AES-256), msoffcrypto-tool's, streamed (ooxml_encrypt.py).
- CSV: put inside a WinZip-AES 256-bit zip with pyzipper (Windows' built-in zip
  tool cannot open AES zips; 7-Zip, WinRAR, macOS Archive Utility can).
- PDF: pypdf ``encrypt(algorithm="AES-256")`` (reportlab's own is RC4).

The password is only ever a local variable here: never stored, logged or audited.
"""

from __future__ import annotations

import os
from pathlib import Path

from meiqia_app.services.errors import ValidationError

MIN_PASSWORD = 8
MAX_PASSWORD = 128


def validate_password(password: str) -> str:
    if not isinstance(password, str) or not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise ValidationError.single("password", "export.error.password_length", min=MIN_PASSWORD, max=MAX_PASSWORD)
    return password


def protect_xlsx(source: Path, target: Path, password: str) -> None:
    from meiqia_app.services.exports.ooxml_encrypt import encrypt_ooxml

    encrypt_ooxml(source, target, password)


def protect_csv(source: Path, target: Path, password: str, inner_name: str) -> None:
    import pyzipper

    # Deflate level 1 (as the XLSX writer): several times faster than the default on
    # 100 MB of CSV for a file ~10% bigger.
    with pyzipper.AESZipFile(
        target, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES, compresslevel=1
    ) as archive:
        archive.setpassword(password.encode("utf-8"))
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        archive.write(source, arcname=inner_name)


def protect_pdf(source: Path, target: Path, password: str) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    # The owner password is random: nobody can lift the restrictions with it.
    writer.encrypt(user_password=password, owner_password=os.urandom(24).hex(), algorithm="AES-256")
    with open(target, "wb") as handle:
        writer.write(handle)


def protect(fmt: str, source: Path, target: Path, password: str, inner_name: str) -> None:
    if fmt == "xlsx":
        protect_xlsx(source, target, password)
    elif fmt == "csv":
        protect_csv(source, target, password, inner_name)
    elif fmt == "pdf":
        protect_pdf(source, target, password)
    else:  # pragma: no cover - formats are validated before
        raise ValueError(fmt)
