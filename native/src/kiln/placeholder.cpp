namespace kiln { int placeholder() { return 0; } }
