"""``cloudfilm hospital``, ``cloudfilm user``, ``cloudfilm ae`` and ``token create --hospital``:
what an operator types to set up a deployment's first hospital admin."""

from __future__ import annotations

from click.testing import CliRunner

from cloudfilm.access.tokens import lookup_token
from cloudfilm.accounts.aes import CALLERS
from cloudfilm.accounts.users import verify_password
from cloudfilm.cli import main
from cloudfilm.config import Settings
from cloudfilm.storage.database import Database


def _run(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "CLOUDFILM_DATA_DIR": str(settings.data_dir),
        "CLOUDFILM_DATABASE_URL": str(settings.database_url),
        "CLOUDFILM_CONFIG": str(settings.data_dir / "none.toml"),
    }
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_the_first_admin_of_a_new_hospital_from_the_command_line(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    code, out = _run(settings, "hospital", "add", "NJ001", "--name", "南京市第一医院",
                     "--latin", "Nanjing First Hospital", "--region", "320100")  # fmt: skip
    assert code == 0 and "NJ001" in out, out
    assert _run(settings, "hospital", "add", "NJ001", "--name", "again")[0] != 0, "codes unique"
    assert _run(settings, "hospital", "add", "bad code", "--name", "x")[0] != 0
    code, out = _run(settings, "hospital", "list")
    assert "default" in out and "NJ001\t南京市第一医院\tNanjing First Hospital\t320100" in out

    code, out = _run(settings, "user", "add", "zhang-admin", "--role", "admin",
                     "--hospital", "NJ001", "--name", "张强")  # fmt: skip
    assert code == 0, out
    first = out.strip().splitlines()[-1]
    db = Database(settings.resolved_database_url)
    try:
        user = verify_password(db, "zhang-admin", first)
        assert user is not None and user.must_change_password and user.role == "admin"
        assert _run(settings, "user", "add", "x", "--role", "admin")[0] != 0, "needs a hospital"
        assert _run(settings, "user", "add", "op", "--role", "operator", "--password",
                    "operator-pass-1")[0] == 0  # fmt: skip

        code, out = _run(settings, "user", "reset", "zhang-admin")
        second = out.strip().splitlines()[-1]
        assert code == 0 and second != first
        assert verify_password(db, "zhang-admin", first) is None
        assert verify_password(db, "zhang-admin", second) is not None

        assert _run(settings, "user", "disable", "zhang-admin")[0] == 0
        assert verify_password(db, "zhang-admin", second) is None, "a disabled user cannot log in"
        code, out = _run(settings, "user", "list", "--hospital", "NJ001")
        assert "zhang-admin\tadmin\tNJ001\t张强\tdisabled" in out

        code, out = _run(settings, "ae", "add", "CT_NJ1", "--hospital", "NJ001",
                         "--host", "10.1.2.3", "--services", "echo,store")  # fmt: skip
        assert code == 0, out
        CALLERS.forget()
        caller = CALLERS.caller(settings, db, "CT_NJ1", "10.1.2.3")
        assert caller.hospital == 2 and caller.services == {"echo", "store"}
        assert CALLERS.caller(settings, db, "CT_NJ1", "10.9.9.9").hospital is None, "wrong host"

        code, out = _run(settings, "token", "create", "--name", "RIS", "--scope", "read,write",
                         "--hospital", "NJ001")  # fmt: skip
        info = lookup_token(db, out.strip().splitlines()[-1])
        assert code == 0 and info is not None and info.hospital == 2
        code, out = _run(settings, "token", "create", "--name", "ops", "--scope", "operator",
                         "--hospital", "-")  # fmt: skip
        info = lookup_token(db, out.strip().splitlines()[-1])
        assert info is not None and info.hospital is None and "operator" in info.scopes
        bad = _run(settings, "token", "create", "--name", "x", "--scope", "operator")
        assert bad[0] != 0, "a hospital's token never gets the operator scope"
    finally:
        db.dispose()
