//! Build cache: step keys, the record store, garbage collection, import/export.
