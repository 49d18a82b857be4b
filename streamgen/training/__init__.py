"""Training: the vision decoder (`model`, Algorithm 1), the codec (`codec`) and their data (`data`)."""
