"""The command-line shell: parse, build settings, call a job, render, exit."""
