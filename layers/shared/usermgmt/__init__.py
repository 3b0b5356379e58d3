"""usermgmt: the shared package of the user lifecycle functions."""
