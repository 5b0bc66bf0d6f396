"""pytest plugin of uowstress: options, profiles and fixtures."""
