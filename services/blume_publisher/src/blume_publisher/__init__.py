"""blume_publisher: the Blume patient record store and the worker that publishes into it."""
