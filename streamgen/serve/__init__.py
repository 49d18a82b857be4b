"""`streamgen serve`: many live streams in one process, controlled over HTTP, watched and steered in a
browser. `config` holds the command's options; `server` starts it; `app` is the HTTP API and the page;
`streams` the streams and their limits; `scheduler` advances them together on one thread; `outputs`
and `video` write their frames to sinks and to the browser's live view."""
