//! ferrocorn's load benchmarks against peers (nginx, hyper, gunicorn).
