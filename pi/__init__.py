"""The device side: the sensor agent (`python -m pi.agent`). It stands alone: it never imports
`components` or `stack`, and imports hardware libraries only when a hardware sensor is used."""
