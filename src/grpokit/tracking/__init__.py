"""grpokit.tracking"""
