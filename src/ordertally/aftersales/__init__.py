"""After-sales (售后): cases, refunds after payment and after shipment, returns received and
inspected, and the end of an order's life (automatic receipt confirmation)."""
