//! OCI image model, the content store (an OCI image layout), archives and the registry client.
