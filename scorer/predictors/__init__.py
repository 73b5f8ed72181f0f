"""Performance predictors: each scores every model of a pool on a query, before any model runs."""
