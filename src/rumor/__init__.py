"""rumor: Hyperledger Fabric's gossip network in Python.

A library and a peer daemon with which organizations form a permissioned
peer-to-peer network that keeps membership, disseminates signed blocks on
channels, brings lagging peers up to date and elects a leader per org.
"""

__version__ = "0.1.0"
