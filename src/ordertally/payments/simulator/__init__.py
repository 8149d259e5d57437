"""A payment simulator that plays WeChat Pay v3 and Alipay byte for byte with generated test keys.

`keys` makes and reloads the key set, `messages` builds signed notifications and answers (pure
functions), `bills` writes the platforms' statement files, `engine` holds the trades and
delivers notifications, and `app` is the HTTP server behind `ordertally paysim serve`.
"""
