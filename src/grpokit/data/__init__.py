"""grpokit.data"""
