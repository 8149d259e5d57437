"""Platform adapters: each platform's order shapes into CanonicalOrder, and their API clients."""
