"""The back office: server-rendered pages (Jinja2 + htmx, Pico CSS, ECharts, all vendored) that
call the domains' public services, behind username/password sign-in with server-side sessions."""
