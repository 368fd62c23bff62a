package main

import "math"

var nan = math.NaN()
