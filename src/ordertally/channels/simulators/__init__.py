"""Local HTTP simulators of the channel platforms (Shopify, Amazon, Pinduoduo)."""
