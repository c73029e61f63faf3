"""One adapter per dataset kind; each writes or reads raw images and yields a uniform index table."""
