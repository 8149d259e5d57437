"""Test keys for the payment simulator: both platforms' key pairs, ordertally's halves on disk.

API:

- `generate(directory, api_base) -> SimKeys` makes fresh RSA-2048 keys and writes

  - `wechatpay/platform/<serial>.pem`: the WeChat Pay platform PUBLIC key (ordertally verifies
    notifications and answers with it; a directory, so rotated serials can coexist), private
    half in `sim/wechatpay_platform_private.pem`;
  - `wechatpay/merchant_private.pem`: the merchant PRIVATE key (PKCS#8) ordertally signs API
    requests with, serial `SimKeys.merchant_serial`; public half in `sim/merchant_public.pem`;
  - `alipay/alipay_public.pem`: Alipay's public key (private half `sim/alipay_private.pem`);
  - `alipay/app_private.pem`: ordertally's app private key (public half `sim/app_public.pem`);
  - `ordertally.env`: the `ORDERTALLY_WECHATPAY_*` / `ORDERTALLY_ALIPAY_*` lines pointing at them.

- `SimKeys.load(directory)` reloads a set; `SimKeys.settings_env()` is the `ordertally.env`
  mapping; `rotate_platform_key(directory)` adds a new platform key and makes it the one that
  signs (the old public key stays, as during a real rotation).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

WECHATPAY_MCHID = "1900000109"
WECHATPAY_APPID = "wxd678efh567hg6787"
ALIPAY_APP_ID = "2021000000000000"
ALIPAY_SELLER_ID = "2088000000000000"

ENV_FILE = "ordertally.env"
_META = "sim/meta.json"
_PLATFORM_PRIVATE = "sim/wechatpay_platform_private.pem"
_MERCHANT_PUBLIC = "sim/merchant_public.pem"
_ALIPAY_PRIVATE = "sim/alipay_private.pem"
_APP_PUBLIC = "sim/app_public.pem"
_MERCHANT_PRIVATE = "wechatpay/merchant_private.pem"
_PLATFORM_DIR = "wechatpay/platform"
_ALIPAY_PUBLIC = "alipay/alipay_public.pem"
_APP_PRIVATE = "alipay/app_private.pem"


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-2048 private key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_serial() -> str:
    """A certificate-style serial: 40 upper-case hex digits."""
    return secrets.token_hex(20).upper()


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (what both platforms hand out)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: rsa.RSAPublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read_private(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path.name} is not an RSA private key")
    return key


def _read_public(path: Path) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path.name} is not an RSA public key")
    return key


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


@dataclass(frozen=True, slots=True, eq=False)
class SimKeys:
    """One simulated merchant: identifiers, the APIv3 key and the key pairs of both platforms."""

    directory: Path
    api_base: str
    apiv3_key: str
    platform_serial: str
    platform_private: rsa.RSAPrivateKey
    merchant_serial: str
    merchant_private: rsa.RSAPrivateKey
    merchant_public: rsa.RSAPublicKey
    alipay_private: rsa.RSAPrivateKey
    app_private: rsa.RSAPrivateKey
    app_public: rsa.RSAPublicKey
    mchid: str = WECHATPAY_MCHID
    appid: str = WECHATPAY_APPID
    alipay_app_id: str = ALIPAY_APP_ID
    alipay_seller_id: str = ALIPAY_SELLER_ID
    # Retired platform keys still able to sign (serial -> private key), for rotation tests.
    retired_platform_keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)

    @property
    def platform_public(self) -> rsa.RSAPublicKey:
        return self.platform_private.public_key()

    @property
    def alipay_public(self) -> rsa.RSAPublicKey:
        return self.alipay_private.public_key()

    @property
    def platform_keys_dir(self) -> Path:
        return self.directory / _PLATFORM_DIR

    @property
    def platform_public_file(self) -> Path:
        return self.platform_keys_dir / f"{self.platform_serial}.pem"

    @property
    def merchant_key_file(self) -> Path:
        return self.directory / _MERCHANT_PRIVATE

    @property
    def alipay_public_key_file(self) -> Path:
        return self.directory / _ALIPAY_PUBLIC

    @property
    def app_private_key_file(self) -> Path:
        return self.directory / _APP_PRIVATE

    @property
    def env_file(self) -> Path:
        return self.directory / ENV_FILE

    def settings_env(self) -> dict[str, str]:
        """The ORDERTALLY_* settings that point ordertally at this key set and the simulator."""
        base = self.api_base.rstrip("/")
        return {
            "ORDERTALLY_WECHATPAY_MCHID": self.mchid,
            "ORDERTALLY_WECHATPAY_APPID": self.appid,
            "ORDERTALLY_WECHATPAY_APIV3_KEY": self.apiv3_key,
            "ORDERTALLY_WECHATPAY_PLATFORM_KEYS_DIR": str(self.platform_keys_dir),
            "ORDERTALLY_WECHATPAY_MERCHANT_KEY_FILE": str(self.merchant_key_file),
            "ORDERTALLY_WECHATPAY_MERCHANT_SERIAL": self.merchant_serial,
            "ORDERTALLY_WECHATPAY_API_BASE": base,
            "ORDERTALLY_ALIPAY_APP_ID": self.alipay_app_id,
            "ORDERTALLY_ALIPAY_SELLER_ID": self.alipay_seller_id,
            "ORDERTALLY_ALIPAY_PUBLIC_KEY_FILE": str(self.alipay_public_key_file),
            "ORDERTALLY_ALIPAY_APP_PRIVATE_KEY_FILE": str(self.app_private_key_file),
            "ORDERTALLY_ALIPAY_GATEWAY": f"{base}/gateway.do",
        }

    def platform_public_pem(self) -> str:
        """The current platform public key as PEM text (what verifiers are given)."""
        return public_pem(self.platform_public).decode()

    def merchant_private_pem(self) -> str:
        """The merchant private key as PKCS#8 PEM text."""
        return private_pem(self.merchant_private).decode()

    def alipay_public_pem(self) -> str:
        """Alipay's public key as PEM text."""
        return public_pem(self.alipay_public).decode()

    def app_private_pem(self) -> str:
        """ordertally's Alipay app private key as PKCS#8 PEM text."""
        return private_pem(self.app_private).decode()

    @classmethod
    def load(cls, directory: Path) -> SimKeys:
        """Reload a key set written by `generate`."""
        directory = Path(directory).resolve()
        env = read_env(directory / ENV_FILE)
        meta = json.loads((directory / _META).read_text())
        retired = {
            serial: _read_private(directory / f"sim/wechatpay_platform_private.{serial}.pem")
            for serial in meta.get("retired_platform_serials", [])
        }
        return cls(
            directory=directory,
            api_base=env["ORDERTALLY_WECHATPAY_API_BASE"],
            apiv3_key=env["ORDERTALLY_WECHATPAY_APIV3_KEY"],
            platform_serial=meta["platform_serial"],
            platform_private=_read_private(directory / _PLATFORM_PRIVATE),
            merchant_serial=env["ORDERTALLY_WECHATPAY_MERCHANT_SERIAL"],
            merchant_private=_read_private(directory / _MERCHANT_PRIVATE),
            merchant_public=_read_public(directory / _MERCHANT_PUBLIC),
            alipay_private=_read_private(directory / _ALIPAY_PRIVATE),
            app_private=_read_private(directory / _APP_PRIVATE),
            app_public=_read_public(directory / _APP_PUBLIC),
            mchid=env["ORDERTALLY_WECHATPAY_MCHID"],
            appid=env["ORDERTALLY_WECHATPAY_APPID"],
            alipay_app_id=env["ORDERTALLY_ALIPAY_APP_ID"],
            alipay_seller_id=env["ORDERTALLY_ALIPAY_SELLER_ID"],
            retired_platform_keys=retired,
        )


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _write_env(keys: SimKeys) -> None:
    lines = ["# Written by `ordertally paysim keys`: test keys for the payment simulator only."]
    lines += [f"{k}={v}" for k, v in keys.settings_env().items()]
    _write(keys.env_file, ("\n".join(lines) + "\n").encode(), private=True)


def _write_meta(keys: SimKeys) -> None:
    meta = {
        "platform_serial": keys.platform_serial,
        "retired_platform_serials": sorted(keys.retired_platform_keys),
    }
    _write(keys.directory / _META, json.dumps(meta, indent=2).encode(), private=False)


def generate(directory: Path, api_base: str) -> SimKeys:
    """Create a fresh key set under `directory` (replacing one already there)."""
    directory = Path(directory).resolve()
    alphabet = string.ascii_letters + string.digits
    keys = SimKeys(
        directory=directory,
        api_base=api_base.rstrip("/"),
        apiv3_key="".join(secrets.choice(alphabet) for _ in range(32)),
        platform_serial=new_serial(),
        platform_private=new_rsa_key(),
        merchant_serial=new_serial(),
        merchant_private=(merchant := new_rsa_key()),
        merchant_public=merchant.public_key(),
        alipay_private=new_rsa_key(),
        app_private=(app := new_rsa_key()),
        app_public=app.public_key(),
    )
    platform_dir = keys.platform_keys_dir
    if platform_dir.is_dir():
        for old in platform_dir.glob("*.pem"):
            old.unlink()
    _write(keys.platform_public_file, public_pem(keys.platform_public), private=False)
    _write(directory / _PLATFORM_PRIVATE, private_pem(keys.platform_private), private=True)
    _write(keys.merchant_key_file, private_pem(keys.merchant_private), private=True)
    _write(directory / _MERCHANT_PUBLIC, public_pem(keys.merchant_public), private=False)
    _write(keys.alipay_public_key_file, public_pem(keys.alipay_public), private=False)
    _write(directory / _ALIPAY_PRIVATE, private_pem(keys.alipay_private), private=True)
    _write(keys.app_private_key_file, private_pem(keys.app_private), private=True)
    _write(directory / _APP_PUBLIC, public_pem(keys.app_public), private=False)
    _write_meta(keys)
    _write_env(keys)
    return keys


def rotate_platform_key(directory: Path) -> SimKeys:
    """Add a new WeChat Pay platform key and sign with it from now on; the old public key stays
    in the platform directory (and can still sign, for tests of the overlap)."""
    old = SimKeys.load(directory)
    new_key, serial = new_rsa_key(), new_serial()
    retired = dict(old.retired_platform_keys)
    retired[old.platform_serial] = old.platform_private
    _write(
        old.directory / f"sim/wechatpay_platform_private.{old.platform_serial}.pem",
        private_pem(old.platform_private),
        private=True,
    )
    _write(old.platform_keys_dir / f"{serial}.pem", public_pem(new_key.public_key()), private=False)
    _write(old.directory / _PLATFORM_PRIVATE, private_pem(new_key), private=True)
    keys = SimKeys(
        directory=old.directory,
        api_base=old.api_base,
        apiv3_key=old.apiv3_key,
        platform_serial=serial,
        platform_private=new_key,
        merchant_serial=old.merchant_serial,
        merchant_private=old.merchant_private,
        merchant_public=old.merchant_public,
        alipay_private=old.alipay_private,
        app_private=old.app_private,
        app_public=old.app_public,
        mchid=old.mchid,
        appid=old.appid,
        alipay_app_id=old.alipay_app_id,
        alipay_seller_id=old.alipay_seller_id,
        retired_platform_keys=retired,
    )
    _write_meta(keys)
    return keys
