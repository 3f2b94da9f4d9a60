"""grpokit.models"""
