"""Sources of log lines: a replayed file or stream, and (see ``tail``) a followed log."""
