"""One instrumentor per engine; `auto` switches the plugin on under opentelemetry-instrument."""
