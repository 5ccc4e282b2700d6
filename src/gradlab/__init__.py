"""gradlab: composable, recorded, comparable gradient-descent experiments."""
