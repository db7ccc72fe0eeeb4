"""The HTTP layer: schemas, dependencies, middleware, and one router per surface."""
