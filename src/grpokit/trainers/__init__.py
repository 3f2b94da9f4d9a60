"""grpokit.trainers"""
