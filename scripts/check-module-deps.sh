#!/bin/sh
# Dependencies point one way: the edges of the service (src/supabase/, src/twilio/, src/ops/)
# never name the delivery logic, and nothing but main.rs and lib.rs names the wiring
# (crate::service). Every line counts, doc comments and intra-doc links included, so a link
# cannot point back either. Prints each offending line and exits 1 when there is one.
set -eu

cd "$(dirname "$0")/.."

# `crate::delivery…`, `super::…::delivery…`, or `delivery` inside a `crate::{…}` group.
delivery='(crate|super)::([a-z_]+::)*delivery\b|crate::\{[^}]*\bdelivery\b'
service='(crate|super)::service\b|crate::\{[^}]*\bservice\b'

status=0

found=$(grep -rnE --include='*.rs' "$delivery" src/supabase src/twilio src/ops || true)
if [ -n "$found" ]; then
    echo "src/supabase, src/twilio and src/ops must not name crate::delivery:"
    echo "$found"
    status=1
fi

found=$(grep -rnE --include='*.rs' "$service" src | grep -vE '^src/(main|lib)\.rs:' || true)
if [ -n "$found" ]; then
    echo "only src/main.rs and src/lib.rs may name crate::service:"
    echo "$found"
    status=1
fi

if [ "$status" -eq 0 ]; then
    echo "module dependencies point one way: no edge module names crate::delivery, only main.rs and lib.rs name crate::service"
fi
exit "$status"
