"""Loss landscapes: 1-D and 2-D slices of the loss, and sharpness."""
