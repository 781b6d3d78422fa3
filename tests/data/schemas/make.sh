#!/usr/bin/env bash
# Write the schema each release of ceptoar gave a new database, from schema version 1 to 12 (the last
# before Alembic), as SQL for SQLite and for PostgreSQL: tests/test_migrations.py brings each to the
# head revision. Run from the repository's top, with PostgreSQL on 127.0.0.1 and .venv installed; each
# version is the last commit at it (the parent of the commit that brought the next one).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=tests/data/schemas
pg=${CEPTOAR_TEST_PG_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}
# version: the commit that brought the next version (its parent is the last one at this version)
declare -A next=([1]=0a9a048 [2]=84051d4 [3]=17df7c6 [4]=efc57a0 [5]=d01c1ee [6]=07eee57 [7]=d8ecd6c
                 [8]=d2158c1 [9]=b863b9e [10]=0e83e3c [11]=b416e2b [12]=01deb05)
for version in $(seq 1 12); do
  commit=$(git rev-parse --short "${next[$version]}^")
  tree=$(mktemp -d)
  git worktree add -q -f "$tree" "$commit"
  db="ceptoar_schema_v$version"
  psql "$pg" -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  for url in "sqlite+aiosqlite:///$tree/new.db" "${pg%/*}/$db"; do
    (cd "$tree" && "$OLDPWD/.venv/bin/python" -c "
import asyncio, sys
# The checkout's ceptoar, not the one .venv has installed for editing.
sys.meta_path = [f for f in sys.meta_path if '__editable__' not in type(f).__module__]
import ceptoar
assert ceptoar.__file__.startswith(sys.argv[2]), ceptoar.__file__
from ceptoar.store import Store
async def main():
    store = await Store.open(sys.argv[1])
    await store.close()
asyncio.run(main())" "${url/#postgresql:/postgresql+asyncpg:}" "$tree")
  done
  {
    echo "-- A new database of ceptoar's schema version $version, as commit $commit made it (make.sh)."
    sqlite3 "$tree/new.db" .schema
    sqlite3 "$tree/new.db" ".mode insert schema_version" "SELECT version, '2026-12-01 00:00:00' FROM schema_version" 2>/dev/null || true
  } > "$out/sqlite-v$version.sql"
  {
    echo "-- A new database of ceptoar's schema version $version, as commit $commit made it (make.sh)."
    pg_dump --schema-only --no-owner --no-privileges --no-comments "${pg%/*}/$db" | grep -v '^--' | grep -v '^$' \
      | grep -v 'pg_catalog.set_config' | grep -v '^SET ' | grep -v '^\\'
    pg_dump --data-only --inserts --no-owner -t schema_version "${pg%/*}/$db" 2>/dev/null | grep '^INSERT' \
      | sed "s/'[0-9-]* [0-9:.+]*'/'2026-12-01 00:00:00+00'/" || true
  } > "$out/postgresql-v$version.sql"
  psql "$pg" -q -c "DROP DATABASE $db"
  git worktree remove --force "$tree"
done
