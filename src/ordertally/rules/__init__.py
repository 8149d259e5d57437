"""Rules without code: if-then rules (a trigger, a CEL condition over documented facts, a list of
actions) that operations set up, dry-run over history and switch on; and purchase plans, the
expected receipts the stock rules read."""
