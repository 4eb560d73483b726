"""Office agile encryption (AES-256) of a finished XLSX file, streamed.

msoffcrypto-tool's ``OOXMLFile.encrypt`` holds the plain file, the encrypted
package and the finished container in memory at once (about three times the
file: a protected XLSX of 1M rows would take the job far past its memory
bound). This writes the same container with the same library's key
derivation, cipher helpers and container layout, but encrypts 4 KiB segment
by segment into a private temporary file (the data-integrity HMAC computed on
the way) and copies that into the container in chunks: memory stays a few
chunks whatever the size.

It relies on msoffcrypto-tool 6.1 internals (pinned in requirements.txt):
``ecma376_agile``'s helpers and ``ECMA376Encrypted``'s layout. The tests
decrypt what it writes with msoffcrypto itself, open the workbook with
openpyxl, and check that a wrong password is refused.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from struct import pack

from msoffcrypto.method import ecma376_agile as agile
from msoffcrypto.method.container.ecma376_encrypted import (
    DSPos,
    ECMA376Encrypted,
    ECMA376EncryptedLayout,
    Header,
)

SEGMENT_LENGTH = 4096  # the agile encryption's segment (MS-OFFCRYPTO 2.3.4.15)
COPY_CHUNK = 1 << 20


class _PackageSize:
    """Stands in for the EncryptedPackage bytes: the layout only asks their length."""

    def __init__(self, size: int) -> None:
        self._size = size

    def __len__(self) -> int:
        return self._size


class _StreamedContainer(ECMA376Encrypted):
    """The compound file of an encrypted OOXML document, written to a real file
    with the (large) EncryptedPackage stream copied from disk."""

    def __init__(self, package: Path, encryption_info: bytes) -> None:
        self._package = package
        super().__init__(_PackageSize(package.stat().st_size), encryption_info)

    def write_file(self, handle) -> None:
        """``ECMA376Encrypted._write_to`` without its in-memory zero fill of the whole file."""
        layout = ECMA376EncryptedLayout(self._header.sectorSize)
        self._set_sector_locations_of_streams(layout)
        self._detect_sector_num(layout)
        self._header.firstDirectorySectorLocation = layout.directoryEntryPos
        self._header.firstMiniFatSectorLocation = layout.miniFatPos
        self._header.numMiniFatSectors = layout.numMiniFatSectors
        self._dirs[DSPos.iRoot].StartingSectorLocation = layout.miniFatDataPos
        self._dirs[DSPos.iRoot].Content = b"\0" * (64 * layout.miniFatNum)
        self._dirs[DSPos.iEncryptionPackage].StartingSectorLocation = layout.encryptionPackagePos
        for i in range(min(layout.fatSectorNum, Header.FIRSTNUMDIFAT)):
            self._header.difat.append(layout.fatPos + i)
        self._header.numFatSectors = layout.fatSectorNum
        self._header.numDifatSectors = layout.difatSectorNum
        if layout.difatSectorNum > 0:
            self._header.firstDifatSectorLocation = layout.difatPos
        handle.truncate(layout.totalSize)  # zeros, without holding them
        handle.seek(0)
        self._header.write_to(handle)
        self._write_DIFAT(handle, layout)
        self._write_FAT_start(handle, layout)
        self._write_MiniFAT(handle, layout)
        self._write_directory_entries(handle, layout)
        self._write_Content(handle, layout)

    def _write_Content(self, obuf, layout: ECMA376EncryptedLayout) -> None:  # noqa: N802 - the library's name
        package = self._dirs[DSPos.iEncryptionPackage]
        for entry in self._dirs:
            if entry is package:
                obuf.seek(layout.offsetData(entry.StartingSectorLocation))
                with self._package.open("rb") as source:
                    while chunk := source.read(COPY_CHUNK):
                        obuf.write(chunk)
            elif len(entry.Content):
                # Every other stream is small: it lives in the mini stream.
                obuf.seek(layout.offsetMiniData(entry.StartingSectorLocation))
                obuf.write(entry.Content)


def _encrypt_package(
    source: Path, target: Path, params, secret_key: bytes, salt_value: bytes, hmac_key: bytes, hmac_hash: str
) -> bytes:
    """The EncryptedPackage stream (8-byte plain size, then each AES-CBC encrypted
    segment) written to ``target``; returns the HMAC of the whole stream."""
    digest = hmac.new(hmac_key, digestmod=agile._get_hash_func(hmac_hash))
    with source.open("rb") as plain, target.open("wb") as out:
        size = pack("<Q", source.stat().st_size)
        out.write(size)
        digest.update(size)
        index = 0
        while segment := plain.read(SEGMENT_LENGTH):
            if index == 0 and len(segment) < SEGMENT_LENGTH:
                # A stream under 4 KiB belongs in the compound file's mini stream, and this
                # container (like the library's layout) puts the package in regular sectors:
                # readers then take the sectors for mini-stream ones and cannot decrypt it (an
                # export of a few rows). The one segment is zero-padded to 4 KiB instead;
                # readers stop at the plain size written above (MS-OFFCRYPTO 2.3.4.4).
                segment = segment.ljust(SEGMENT_LENGTH, b"\0")
            iv = agile._normalize_key(
                agile._get_hash_func(params.hashName)(salt_value + pack("<I", index)).digest(), params.saltSize
            )
            encrypted = agile._encrypt_aes_cbc_padded(segment, secret_key, iv, params.blockSize)
            out.write(encrypted)
            digest.update(encrypted)
            index += 1
    return digest.digest()


def encrypt_ooxml(source: Path, target: Path, password: str) -> None:
    """Write ``source`` (a finished .xlsx) to ``target`` encrypted with ``password``
    (agile encryption: AES-256-CBC, SHA-512, 100,000 spins, as msoffcrypto does)."""
    info, secret_key = agile.ECMA376Agile.generate_encryption_parameters(password)
    params = info.keyData  # the integrity parameters; the segments use encryptedKey's, like the library
    # Data integrity (MS-OFFCRYPTO 2.3.4.14), as ECMA376Agile.generate_integrity_parameter
    # does it, with the HMAC fed while the package is encrypted.
    hmac_key = agile._random_buffer(params.hashSize)
    package = target.with_name("." + target.name + ".package")
    try:
        hmac_value = _encrypt_package(
            source, package, info.encryptedKey, secret_key, params.saltValue, hmac_key, params.hashName
        )
        iv1 = agile._generate_iv(params, agile.blkKey_dataIntegrity1, params.saltValue)
        iv2 = agile._generate_iv(params, agile.blkKey_dataIntegrity2, params.saltValue)
        info.encryptedHmacKey = agile._encrypt_aes_cbc(hmac_key, secret_key, iv1)
        info.encryptedHmacValue = agile._encrypt_aes_cbc(hmac_value, secret_key, iv2)
        encryption_info = info.getEncryptionDescriptorHeader() + info.toEncryptionDescriptor().encode("UTF-8")
        with open(target, "wb") as handle:
            _StreamedContainer(package, encryption_info).write_file(handle)
    finally:
        package.unlink(missing_ok=True)
    os.chmod(target, 0o600)
