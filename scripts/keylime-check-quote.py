#!/usr/bin/env python3
"""Check a TPM quote with Keylime's own verifier code, offline (a checker we did not write).

Usage: keylime-check-quote.py DIR QUALIFYING_DATA_HEX TPM_POLICY.json

DIR holds quote.msg (TPMS_ATTEST), quote.sig (TPMT_SIGNATURE), quote.pcrs (tpm2-tools
"serialized" PCR file) and ak.pub (the AK as TPM2B_PUBLIC). TPM_POLICY.json is Keylime's
tpm_policy (what `appliance reference export --format keylime` writes). Prints PASS or
FAIL with Keylime's failure event ids; exit 0 only on PASS.

Needs the `keylime` Python package (7.14.3, from PyPI, with its dependencies listed in
scripts/test) and tpm2-tools on PATH (Keylime runs `tpm2_startup --version` on import).
The python-gpg module is only needed for signing: a stub stands in when it is missing.
"""
import base64
import json
import pathlib
import sys
import types

try:
    import gpg  # noqa: F401
except ImportError:
    sys.modules["gpg"] = types.ModuleType("gpg")

from keylime.mba import mba

mba.load_imports(skip_custom_policies=True)
from keylime.common.algorithms import Hash  # noqa: E402
from keylime.tpm.tpm_main import Tpm  # noqa: E402


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    d = pathlib.Path(sys.argv[1])
    nonce = bytes.fromhex(sys.argv[2])
    policy = json.loads(pathlib.Path(sys.argv[3]).read_text())

    def b64(name: str) -> str:
        return base64.b64encode((d / name).read_bytes()).decode()

    # Keylime's quote wire format: "r" + b64(TPMS_ATTEST) : b64(TPMT_SIGNATURE) : b64(PCR blob)
    quote = "r" + b64("quote.msg") + ":" + b64("quote.sig") + ":" + b64("quote.pcrs")
    failure = Tpm().check_quote(
        None, nonce, None, quote, (d / "ak.pub").read_bytes(),
        tpm_policy=policy, hash_alg=Hash.SHA256, skip_clock_check=True,
    )
    ids = [e.event_id for e in failure.events]
    print("PASS" if not ids else f"FAIL {ids}")
    return 1 if ids else 0


if __name__ == "__main__":
    sys.exit(main())
