"""The packaged benchmarks behind `attn-plugins bench NAME`: each module has run() and main()."""
