"""The live dashboard: the server's figures as a `$stats` event a second, and the static
page that draws them (served at `/` unless `--no-dashboard`)."""
