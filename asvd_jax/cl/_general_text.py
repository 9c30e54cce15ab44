"""Held-out English text for the general-ability check (outside every task of the suites).

Encyclopedic paragraphs on science, geography and history, written for this project: no news,
tweets or reviews, so a rise of the LM loss on them after a task sequence measures lost
general language ability rather than anything the tasks taught.
"""

PARAGRAPHS = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light "
    "energy into chemical energy. Inside the chloroplasts, chlorophyll absorbs mostly blue and "
    "red light, and the energy drives the splitting of water into oxygen, protons and electrons. "
    "The electrons pass along a chain of proteins in the thylakoid membrane, and the energy they "
    "release is stored in two carrier molecules that later power the fixation of carbon dioxide "
    "into sugars in the Calvin cycle.",
    "The Danube is the second-longest river in Europe. It rises in the Black Forest in Germany and "
    "flows for about 2,850 kilometres to the east and south-east before it empties into the Black "
    "Sea through a wide delta in Romania and Ukraine. Along its course it passes through or along "
    "the borders of ten countries, and four capital cities stand on its banks: Vienna, Bratislava, "
    "Budapest and Belgrade.",
    "A prime number is a natural number greater than one that has no divisors other than one and "
    "itself. Euclid proved more than two thousand years ago that there are infinitely many primes: "
    "if the list were finite, the product of all of them plus one would leave a remainder of one "
    "when divided by each, so it would have a prime factor missing from the list. The "
    "distribution of the primes among the integers is described, on average, by the prime number "
    "theorem.",
    "The printing press with movable metal type was developed in Mainz around the middle of the "
    "fifteenth century. Within fifty years presses were working in more than two hundred cities "
    "across Europe, and millions of books had been printed. Cheaper books spread literacy, helped "
    "standardise spelling and grammar in several languages, and made it far easier for scholars to "
    "compare, correct and build on each other's work.",
    "Glaciers form where more snow falls in winter than melts in summer. Over many years the snow "
    "is compressed into dense ice, which begins to flow slowly downhill under its own weight. As a "
    "glacier moves it scrapes and plucks the rock beneath it, carving U-shaped valleys, sharp "
    "ridges and deep basins that later fill with water to become lakes and fjords.",
    "The human heart has four chambers. The right atrium receives blood returning from the body "
    "and passes it to the right ventricle, which pumps it to the lungs, where it takes up oxygen "
    "and releases carbon dioxide. The blood then returns to the left atrium and flows into the "
    "left ventricle, whose thick muscular wall pumps it out through the aorta to the rest of the "
    "body. Valves between the chambers keep the blood flowing in one direction.",
    "A sundial tells the time from the position of a shadow cast by the sun. Its pointer, called "
    "the gnomon, is usually set parallel to the axis of the earth's rotation, so that the shadow "
    "moves by the same angle every hour throughout the year. Because the earth's orbit is an "
    "ellipse and its axis is tilted, sundial time can differ from clock time by up to about a "
    "quarter of an hour, a difference described by the equation of time.",
    "Honeybees live in colonies of tens of thousands of workers, a few hundred drones and a single "
    "queen. A worker that has found a rich source of nectar returns to the hive and performs a "
    "waggle dance on the comb: the angle of the dance relative to the vertical shows the direction "
    "of the food relative to the sun, and the length of the waggle run tells the distance.",
)
