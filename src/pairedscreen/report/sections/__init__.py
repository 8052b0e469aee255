"""The report sections: each gathers its part of the report from stored results."""
