"""``gni keys create|list|revoke``: the service's API keys, administered on its database.

The database is the one the service uses (``$GNI_DATABASE_URL``, or the embedded SQLite file under
``--data-folder``/``$GNI_DATA_FOLDER``). A new key is printed once, on standard output, and only
its hash is stored: keep it then or create another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="create, list and revoke the service's API keys",
        description="Administer API keys on the service's database (GNI_DATABASE_URL or the data folder).",
    )
    parser.add_argument("--data-folder", type=Path, default=None, help="the embedded mode's data folder")
    parser.add_argument(
        "--migrate", action="store_true", help="upgrade the database schema first (a fresh embedded database)"
    )
    actions = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--json", action="store_true", help="print {id, name, key} as JSON")
    listing = actions.add_parser("list", help="list keys (ids, names, dates; never the keys)")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    revoke = actions.add_parser("revoke", help="revoke a key by its id (the part after gni_)")
    revoke.add_argument("key_id", help="the key's id, as `gni keys list` shows it")
    parser.set_defaults(handler=handle_keys)


def handle_keys(args: argparse.Namespace) -> int:
    from sqlalchemy import inspect

    from gni_service.auth import create_api_key, list_api_keys, revoke_api_key
    from gni_service.db import Database
    from gni_service.migrate import upgrade_database
    from gni_service.settings import ServiceSettings

    overrides = {"GNI_DATA_FOLDER": str(args.data_folder)} if args.data_folder is not None else {}
    settings = ServiceSettings.from_env({**os.environ, **overrides})
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_folder.mkdir(parents=True, exist_ok=True)
    if args.migrate:
        upgrade_database(url)
    database = Database(url)
    try:
        if not inspect(database.engine).has_table("api_keys"):
            where = database.engine.url.render_as_string(hide_password=True)
            sys.stderr.write(
                f"error: the database {where} has no gni schema yet: start `gni serve` on it once, "
                "or add --migrate (`gni keys --migrate create --name NAME`)\n"
            )
            return 2
        with database.transaction() as session:
            if args.keys_action == "create":
                info, plaintext = create_api_key(session, args.name)
                if args.json:
                    print(json.dumps({"id": info.id, "name": info.name, "key": plaintext}))
                else:
                    print(plaintext)
                    sys.stderr.write(f"created key {info.id} ({info.name}); it is shown only this once\n")
            elif args.keys_action == "list":
                rows = [
                    {
                        "id": k.id,
                        "name": k.name,
                        "created_at": k.created_at.isoformat(),
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    }
                    for k in list_api_keys(session)
                ]
                if args.json:
                    print(json.dumps(rows))
                for row in [] if args.json else rows:
                    state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
                    print(f"{row['id']}  {row['created_at']}  {state:<40}  {row['name']}")
            else:
                info = revoke_api_key(session, args.key_id)
                print(f"revoked {info.id} ({info.name})")
    finally:
        database.dispose()
    return 0
