"""The 1000 ImageNet-1k (ILSVRC-2012) class names in the standard class-index order (the sorted WordNet synset
ids n01440764 ... n15075141 that torchvision, timm and the TensorFlow reference models use), by the short
names torchvision shows (e.g. 281 "tabby", 282 "tiger cat", 967 "espresso"). Written out here, not downloaded.
Two names occur twice, as in the original list: "crane" (134 the bird, 517 the machine) and "maillot" (638,
639).

``IMAGENET_CLASSES[i]`` is the name of logit ``i``; ``CAT_CLASSES`` are the indices of the domestic cats.
"""

from __future__ import annotations

# One row per ten classes: "first index: ten names separated by semicolons"; a long row continues indented.
_ROWS = """
000: tench; goldfish; great white shark; tiger shark; hammerhead; electric ray; stingray; cock; hen; ostrich
010: brambling; goldfinch; house finch; junco; indigo bunting; robin; bulbul; jay; magpie; chickadee
020: water ouzel; kite; bald eagle; vulture; great grey owl; European fire salamander; common newt; eft; spotted
     salamander; axolotl
030: bullfrog; tree frog; tailed frog; loggerhead; leatherback turtle; mud turtle; terrapin; box turtle; banded
     gecko; common iguana
040: American chameleon; whiptail; agama; frilled lizard; alligator lizard; Gila monster; green lizard; African
     chameleon; Komodo dragon; African crocodile
050: American alligator; triceratops; thunder snake; ringneck snake; hognose snake; green snake; king snake; garter
     snake; water snake; vine snake
060: night snake; boa constrictor; rock python; Indian cobra; green mamba; sea snake; horned viper; diamondback;
     sidewinder; trilobite
070: harvestman; scorpion; black and gold garden spider; barn spider; garden spider; black widow; tarantula; wolf
     spider; tick; centipede
080: black grouse; ptarmigan; ruffed grouse; prairie chicken; peacock; quail; partridge; African grey; macaw;
     sulphur-crested cockatoo
090: lorikeet; coucal; bee eater; hornbill; hummingbird; jacamar; toucan; drake; red-breasted merganser; goose
100: black swan; tusker; echidna; platypus; wallaby; koala; wombat; jellyfish; sea anemone; brain coral
110: flatworm; nematode; conch; snail; slug; sea slug; chiton; chambered nautilus; Dungeness crab; rock crab
120: fiddler crab; king crab; American lobster; spiny lobster; crayfish; hermit crab; isopod; white stork; black
     stork; spoonbill
130: flamingo; little blue heron; American egret; bittern; crane; limpkin; European gallinule; American coot;
     bustard; ruddy turnstone
140: red-backed sandpiper; redshank; dowitcher; oystercatcher; pelican; king penguin; albatross; grey whale; killer
     whale; dugong
150: sea lion; Chihuahua; Japanese spaniel; Maltese dog; Pekinese; Shih-Tzu; Blenheim spaniel; papillon; toy
     terrier; Rhodesian ridgeback
160: Afghan hound; basset; beagle; bloodhound; bluetick; black-and-tan coonhound; Walker hound; English foxhound;
     redbone; borzoi
170: Irish wolfhound; Italian greyhound; whippet; Ibizan hound; Norwegian elkhound; otterhound; Saluki; Scottish
     deerhound; Weimaraner; Staffordshire bullterrier
180: American Staffordshire terrier; Bedlington terrier; Border terrier; Kerry blue terrier; Irish terrier; Norfolk
     terrier; Norwich terrier; Yorkshire terrier; wire-haired fox terrier; Lakeland terrier
190: Sealyham terrier; Airedale; cairn; Australian terrier; Dandie Dinmont; Boston bull; miniature schnauzer; giant
     schnauzer; standard schnauzer; Scotch terrier
200: Tibetan terrier; silky terrier; soft-coated wheaten terrier; West Highland white terrier; Lhasa; flat-coated
     retriever; curly-coated retriever; golden retriever; Labrador retriever; Chesapeake Bay retriever
210: German short-haired pointer; vizsla; English setter; Irish setter; Gordon setter; Brittany spaniel; clumber;
     English springer; Welsh springer spaniel; cocker spaniel
220: Sussex spaniel; Irish water spaniel; kuvasz; schipperke; groenendael; malinois; briard; kelpie; komondor; Old
     English sheepdog
230: Shetland sheepdog; collie; Border collie; Bouvier des Flandres; Rottweiler; German shepherd; Doberman;
     miniature pinscher; Greater Swiss Mountain dog; Bernese mountain dog
240: Appenzeller; EntleBucher; boxer; bull mastiff; Tibetan mastiff; French bulldog; Great Dane; Saint Bernard;
     Eskimo dog; malamute
250: Siberian husky; dalmatian; affenpinscher; basenji; pug; Leonberg; Newfoundland; Great Pyrenees; Samoyed;
     Pomeranian
260: chow; keeshond; Brabancon griffon; Pembroke; Cardigan; toy poodle; miniature poodle; standard poodle; Mexican
     hairless; timber wolf
270: white wolf; red wolf; coyote; dingo; dhole; African hunting dog; hyena; red fox; kit fox; Arctic fox
280: grey fox; tabby; tiger cat; Persian cat; Siamese cat; Egyptian cat; cougar; lynx; leopard; snow leopard
290: jaguar; lion; tiger; cheetah; brown bear; American black bear; ice bear; sloth bear; mongoose; meerkat
300: tiger beetle; ladybug; ground beetle; long-horned beetle; leaf beetle; dung beetle; rhinoceros beetle; weevil;
     fly; bee
310: ant; grasshopper; cricket; walking stick; cockroach; mantis; cicada; leafhopper; lacewing; dragonfly
320: damselfly; admiral; ringlet; monarch; cabbage butterfly; sulphur butterfly; lycaenid; starfish; sea urchin; sea
     cucumber
330: wood rabbit; hare; Angora; hamster; porcupine; fox squirrel; marmot; beaver; guinea pig; sorrel
340: zebra; hog; wild boar; warthog; hippopotamus; ox; water buffalo; bison; ram; bighorn
350: ibex; hartebeest; impala; gazelle; Arabian camel; llama; weasel; mink; polecat; black-footed ferret
360: otter; skunk; badger; armadillo; three-toed sloth; orangutan; gorilla; chimpanzee; gibbon; siamang
370: guenon; patas; baboon; macaque; langur; colobus; proboscis monkey; marmoset; capuchin; howler monkey
380: titi; spider monkey; squirrel monkey; Madagascar cat; indri; Indian elephant; African elephant; lesser panda;
     giant panda; barracouta
390: eel; coho; rock beauty; anemone fish; sturgeon; gar; lionfish; puffer; abacus; abaya
400: academic gown; accordion; acoustic guitar; aircraft carrier; airliner; airship; altar; ambulance; amphibian;
     analog clock
410: apiary; apron; ashcan; assault rifle; backpack; bakery; balance beam; balloon; ballpoint; Band Aid
420: banjo; bannister; barbell; barber chair; barbershop; barn; barometer; barrel; barrow; baseball
430: basketball; bassinet; bassoon; bathing cap; bath towel; bathtub; beach wagon; beacon; beaker; bearskin
440: beer bottle; beer glass; bell cote; bib; bicycle-built-for-two; bikini; binder; binoculars; birdhouse;
     boathouse
450: bobsled; bolo tie; bonnet; bookcase; bookshop; bottlecap; bow; bow tie; brass; brassiere
460: breakwater; breastplate; broom; bucket; buckle; bulletproof vest; bullet train; butcher shop; cab; caldron
470: candle; cannon; canoe; can opener; cardigan; car mirror; carousel; carpenter's kit; carton; car wheel
480: cash machine; cassette; cassette player; castle; catamaran; CD player; cello; cellular telephone; chain;
     chainlink fence
490: chain mail; chain saw; chest; chiffonier; chime; china cabinet; Christmas stocking; church; cinema; cleaver
500: cliff dwelling; cloak; clog; cocktail shaker; coffee mug; coffeepot; coil; combination lock; computer keyboard;
     confectionery
510: container ship; convertible; corkscrew; cornet; cowboy boot; cowboy hat; cradle; crane; crash helmet; crate
520: crib; Crock Pot; croquet ball; crutch; cuirass; dam; desk; desktop computer; dial telephone; diaper
530: digital clock; digital watch; dining table; dishrag; dishwasher; disk brake; dock; dogsled; dome; doormat
540: drilling platform; drum; drumstick; dumbbell; Dutch oven; electric fan; electric guitar; electric locomotive;
     entertainment center; envelope
550: espresso maker; face powder; feather boa; file; fireboat; fire engine; fire screen; flagpole; flute; folding
     chair
560: football helmet; forklift; fountain; fountain pen; four-poster; freight car; French horn; frying pan; fur coat;
     garbage truck
570: gasmask; gas pump; goblet; go-kart; golf ball; golfcart; gondola; gong; gown; grand piano
580: greenhouse; grille; grocery store; guillotine; hair slide; hair spray; half track; hammer; hamper; hand blower
590: hand-held computer; handkerchief; hard disc; harmonica; harp; harvester; hatchet; holster; home theater;
     honeycomb
600: hook; hoopskirt; horizontal bar; horse cart; hourglass; iPod; iron; jack-o'-lantern; jean; jeep
610: jersey; jigsaw puzzle; jinrikisha; joystick; kimono; knee pad; knot; lab coat; ladle; lampshade
620: laptop; lawn mower; lens cap; letter opener; library; lifeboat; lighter; limousine; liner; lipstick
630: Loafer; lotion; loudspeaker; loupe; lumbermill; magnetic compass; mailbag; mailbox; maillot; maillot
640: manhole cover; maraca; marimba; mask; matchstick; maypole; maze; measuring cup; medicine chest; megalith
650: microphone; microwave; military uniform; milk can; minibus; miniskirt; minivan; missile; mitten; mixing bowl
660: mobile home; Model T; modem; monastery; monitor; moped; mortar; mortarboard; mosque; mosquito net
670: motor scooter; mountain bike; mountain tent; mouse; mousetrap; moving van; muzzle; nail; neck brace; necklace
680: nipple; notebook; obelisk; oboe; ocarina; odometer; oil filter; organ; oscilloscope; overskirt
690: oxcart; oxygen mask; packet; paddle; paddlewheel; padlock; paintbrush; pajama; palace; panpipe
700: paper towel; parachute; parallel bars; park bench; parking meter; passenger car; patio; pay-phone; pedestal;
     pencil box
710: pencil sharpener; perfume; Petri dish; photocopier; pick; pickelhaube; picket fence; pickup; pier; piggy bank
720: pill bottle; pillow; ping-pong ball; pinwheel; pirate; pitcher; plane; planetarium; plastic bag; plate rack
730: plow; plunger; Polaroid camera; pole; police van; poncho; pool table; pop bottle; pot; potter's wheel
740: power drill; prayer rug; printer; prison; projectile; projector; puck; punching bag; purse; quill
750: quilt; racer; racket; radiator; radio; radio telescope; rain barrel; recreational vehicle; reel; reflex camera
760: refrigerator; remote control; restaurant; revolver; rifle; rocking chair; rotisserie; rubber eraser; rugby
     ball; rule
770: running shoe; safe; safety pin; saltshaker; sandal; sarong; sax; scabbard; scale; school bus
780: schooner; scoreboard; screen; screw; screwdriver; seat belt; sewing machine; shield; shoe shop; shoji
790: shopping basket; shopping cart; shovel; shower cap; shower curtain; ski; ski mask; sleeping bag; slide rule;
     sliding door
800: slot; snorkel; snowmobile; snowplow; soap dispenser; soccer ball; sock; solar dish; sombrero; soup bowl
810: space bar; space heater; space shuttle; spatula; speedboat; spider web; spindle; sports car; spotlight; stage
820: steam locomotive; steel arch bridge; steel drum; stethoscope; stole; stone wall; stopwatch; stove; strainer;
     streetcar
830: stretcher; studio couch; stupa; submarine; suit; sundial; sunglass; sunglasses; sunscreen; suspension bridge
840: swab; sweatshirt; swimming trunks; swing; switch; syringe; table lamp; tank; tape player; teapot
850: teddy; television; tennis ball; thatch; theater curtain; thimble; thresher; throne; tile roof; toaster
860: tobacco shop; toilet seat; torch; totem pole; tow truck; toyshop; tractor; trailer truck; tray; trench coat
870: tricycle; trimaran; tripod; triumphal arch; trolleybus; trombone; tub; turnstile; typewriter keyboard; umbrella
880: unicycle; upright; vacuum; vase; vault; velvet; vending machine; vestment; viaduct; violin
890: volleyball; waffle iron; wall clock; wallet; wardrobe; warplane; washbasin; washer; water bottle; water jug
900: water tower; whiskey jug; whistle; wig; window screen; window shade; Windsor tie; wine bottle; wing; wok
910: wooden spoon; wool; worm fence; wreck; yawl; yurt; web site; comic book; crossword puzzle; street sign
920: traffic light; book jacket; menu; plate; guacamole; consomme; hot pot; trifle; ice cream; ice lolly
930: French loaf; bagel; pretzel; cheeseburger; hotdog; mashed potato; head cabbage; broccoli; cauliflower; zucchini
940: spaghetti squash; acorn squash; butternut squash; cucumber; artichoke; bell pepper; cardoon; mushroom; Granny
     Smith; strawberry
950: orange; lemon; fig; pineapple; banana; jackfruit; custard apple; pomegranate; hay; carbonara
960: chocolate sauce; dough; meat loaf; pizza; potpie; burrito; red wine; espresso; cup; eggnog
970: alp; bubble; cliff; coral reef; geyser; lakeside; promontory; sandbar; seashore; valley
980: volcano; ballplayer; groom; scuba diver; rapeseed; daisy; yellow lady's slipper; corn; acorn; hip
990: buckeye; coral fungus; agaric; gyromitra; stinkhorn; earthstar; hen-of-the-woods; bolete; ear; toilet tissue
"""

CAT_CLASSES = (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat


def _parse(text: str) -> tuple[str, ...]:
    rows: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith(" "):
            rows[-1] += " " + line.strip()
        else:
            rows.append(line)
    names: list[str] = []
    for row in rows:
        start, _, rest = row.partition(": ")
        parts = [n.strip() for n in rest.split(";")]
        if int(start) != len(names) or len(parts) != 10:
            raise ValueError(f"class-name row {start} is out of place or does not hold ten names")
        names += parts
    return tuple(names)


IMAGENET_CLASSES: tuple[str, ...] = _parse(_ROWS)
