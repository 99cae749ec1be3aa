"""medianode's benchmarks (run them with scripts/bench): one module per subcommand, shared parts in
common (registry, timing, main), data (the generated corpus) and procs (servers, CPU and RSS from /proc)."""
