"""Where frames go: sinks (files, pipes, RTMP) and live pacing on the wall clock."""
