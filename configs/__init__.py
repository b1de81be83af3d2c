"""Built-in recipes and suites, shipped inside the package as `transferlab.configs`."""
