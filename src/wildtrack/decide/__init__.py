"""From ranked catalogue photos to a verdict: identities, the new-individual threshold, and encounters."""
