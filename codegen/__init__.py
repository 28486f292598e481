"""Code generator: protocols.yaml -> src/scaproust/_generated/ and diagrams/."""
