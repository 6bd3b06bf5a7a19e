"""Prints MultiProcessCollector's exposition of DIR. Usage: expose.py DIR"""
import sys

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
sys.stdout.buffer.write(generate_latest(registry))
