"""One small vocabulary of body regions, and what every way of naming a body part maps onto it.

The similar-exam warning compares a planned exam with exams done elsewhere, and each side names
the body part its own way: a DICOM Body Part Examined defined term (``CHEST``, ``LSPINE``), a
SNOMED CT code of CID 4031 (``816094009``), a study description (``CT Chest W/O``, ``L-SPINE
2 views``), a report's exam name (``胸部CT平扫``, ``腰椎正侧位``). :func:`regions_of` reduces each
to a set of :data:`REGIONS`, so two exams are similar when their sets share a region.

- Defined terms and their codes come from the standard (``bodypart_terms``, generated from
  PS3.16 Annex L and CID 4031); the region each one falls in is assigned below, once per term.
  Terms that name no region (``ARTERY``, ``VEIN``, ``JOINT``, ``PHANTOM``…) map to none.
- A composite names several regions (``CHESTABDPELVIS``, 胸腹部, ``TLSPINE``, 下肢).
- Chinese text is read by longest match (颈椎 before 颈, 股骨头 before 股骨, 宫颈 is pelvis);
  Latin text word by word, with neighbouring words joined to find ``L SPINE`` → ``LSPINE``.
- Anything not understood maps to the empty set, which matches **nothing**: an unknown name
  must not raise a warning about every exam the person ever had.

Laterality (left/right knee) is not compared: the warning errs towards showing.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from cloudfilm.regional.bodypart_terms import ANNEX_L, CID4031_WITHOUT_TERM

REGIONS: dict[str, tuple[str, str]] = {
    "HEAD": ("头颅", "Head"),
    "FACE": ("颌面", "Face"),
    "NECK": ("颈部", "Neck"),
    "CHEST": ("胸部", "Chest"),
    "HEART": ("心脏", "Heart"),
    "BREAST": ("乳腺", "Breast"),
    "ABDOMEN": ("腹部", "Abdomen"),
    "PELVIS": ("盆腔", "Pelvis"),
    "CSPINE": ("颈椎", "Cervical spine"),
    "TSPINE": ("胸椎", "Thoracic spine"),
    "LSPINE": ("腰椎", "Lumbar spine"),
    "SSPINE": ("骶尾椎", "Sacrum and coccyx"),
    "SHOULDER": ("肩部", "Shoulder"),
    "ARM": ("上臂", "Upper arm"),
    "ELBOW": ("肘部", "Elbow"),
    "FOREARM": ("前臂", "Forearm"),
    "WRIST": ("腕部", "Wrist"),
    "HAND": ("手部", "Hand"),
    "HIP": ("髋部", "Hip"),
    "THIGH": ("大腿", "Thigh"),
    "KNEE": ("膝部", "Knee"),
    "LEG": ("小腿", "Lower leg"),
    "ANKLE": ("踝部", "Ankle"),
    "FOOT": ("足部", "Foot"),
    "WHOLEBODY": ("全身", "Whole body"),
}
"""Region code → (Chinese, English) names: the whole vocabulary, head to foot."""

EMPTY: frozenset[str] = frozenset()
SPINE = "CSPINE+TSPINE+LSPINE+SSPINE"
UPPER_LIMB = "SHOULDER+ARM+ELBOW+FOREARM+WRIST+HAND"
LOWER_LIMB = "HIP+THIGH+KNEE+LEG+ANKLE+FOOT"

_TERMS: dict[str, str] = {
    "HEAD": "HEAD BRAIN SKULL INTRACRANIAL CEREBELLUM CEREBHEMISPHERE THALAMUS CHOROIDPLEXUS "
    "LATVENTRICLE 3RDVENTRICLE 4THVENTRICLE CIRCLEOFWILLIS SELLA FONTANEL SCALP ACA MCA PCA "
    "ANTCOMMA POSCOMMA BASILARA CEREBRALA OCCPITALA OCCIPTALV",
    "FACE": "FACE CHEEK EYE EYELID CORNEA SCLERA ORBIT OPTICCANAL EAR EAC IAC MASTOID NOSE "
    "ENDONASAL MOUTH TONGUE JAW MANDIBLE MAXILLA ZYGOMA TMJ FACIALA LACRIMALA LINGUALA "
    "OPHTHALMICA",
    "NECK": "NECK LARYNX PHARYNX PHARYNXLARYNX HYPOPHARYNX NASOPHARYNX ENDONASOPHARYNYX THYROID "
    "PARATHYROID PAROTID SUBMANDIBULAR SUPRACLAVICULAR CAROTID BULB CCA ECA ICA VERTEBRALA "
    "SUPTHYROIDA EXTJUGV INTJUGULARV",
    "CHEST": "CHEST THORAX UPPERTRUNK LUNG MEDIASTINUM TRACHEA BRONCHUS TRACHEABRONCHUS RIB "
    "STERNUM THYMUS ESOPHAGUS ENDOESOPHAGEAL PARASTERNAL THORACICAORTA ASCAORTA AORTICARCH "
    "DESCAORTA PULMONARYA LPULMONARYA RPULMONARYA PULMONARYV LSUPPULMONARYV RSUPPULMONARYV SVC "
    "AZYGOSVEIN INNOMINATEA INNOMINATEV INTMAMMARYA SUBCLAVIANA SUBCLAVIANV",
    "HEART": "HEART ENDOCARDIAC CORONARYARTERY CORONARYSINUS ANTCARDIACV LATRIUM RATRIUM "
    "LVENTRICLE RVENTRICLE",
    "BREAST": "BREAST AXILLA",
    "ABDOMEN": "ABDOMEN EPIGASTRIC SUBCOSTAL FLANK UMBILICAL LUQ RUQ LLQ RLQ LHYPOCHONDRIAC "
    "RHYPOCHONDRIAC LLUMBAR RLUMBAR MORISONSPOUCH RETROPERITONEUM LIVER GALLBLADDER BILEDUCT "
    "BILIARYTRACT COMMONBILEDUCT PANCREAS PANCREATICDUCT PANCBILEDUCT SPLEEN STOMACH DUODENUM "
    "JEJUNUM ILEUM SMALLINTESTINE COLON ASCENDINGCOLON TRANSVERSECOLON DESCENDINGCOLON "
    "LARGEINTESTINE APPENDIX KIDNEY ENDORENAL ADRENAL URETER ENDOURETERIC UPRURINARYTRACT "
    "ABDOMINALAORTA CELIACA HEPATICA HEPATICV LHEPATICV MIDHEPATICV RHEPATICV PORTALV LPORTALV "
    "RPORTALV SPLENICA SPLENICV GASTRICV SMA INFMESA MESENTRICA MESENTRICV RENALA RENALV "
    "INFVENACAVA LUMBARA",
    "PELVIS": "PELVIS HYPOGASTRIC SUPRAPUBIC INGUINAL LINGUINAL RINGUINAL BUTTOCK GLUTEAL "
    "PERINEUM ILIUM SIJOINT BLADDER BLADDERURETHRA ENDOVESICAL URETHRA ENDOURETHRAL PROSTATE "
    "SEMVESICLE TESTIS EPIDIDYMIS SCROTUM PENIS PENILEA UTERUS ENDOMETRIUM CERVIX OVARY VAGINA "
    "ENDOVAGINAL VULVA CULDESAC RECTUM ENDORECTAL SIGMOID ANUSRECTUMSIGMD GESTSAC PLACENTA "
    "AMNIOTICFLUID UMBILICALA UMBILICALV ILIACA ILIACV COMILIACA COMILIACV EXTILIACA EXTILIACV "
    "INTILIACA",
    "CSPINE": "CSPINE",
    "TSPINE": "TSPINE",
    "LSPINE": "LSPINE LUMBAR",
    "SSPINE": "SSPINE COCCYX",
    "SHOULDER": "SHOULDER ACJOINT SCJOINT CLAVICLE SCAPULA AXILLARYA AXILLARYV",
    "ARM": "UPPERARM HUMERUS BRACHIALA BRACHIALV CEPHALICV",
    "ELBOW": "ELBOW ANTECUBITALV",
    "FOREARM": "FOREARM RADIUS ULNA RADIUSULNA RADIALA ULNARA",
    "WRIST": "WRIST",
    "HAND": "HAND FINGER THUMB",
    "HIP": "HIP",
    "THIGH": "THIGH FEMUR FEMORALA LFEMORALA RFEMORALA CFA SFA PROFFEMA FEMORALV CFV SFV "
    "PROFFEMV SFJ",
    "KNEE": "KNEE PATELLA POPLITEALFOSSA POPLITEALA POPLITEALV GENICULARA",
    "LEG": "LOWERLEG CALF TIBIA FIBULA TIBIAFIBULA ANTTIBIALA POSTIBIALA PERONEALA",
    "ANKLE": "ANKLE",
    "FOOT": "FOOT CALCANEUS TOE SESAMOID",
    "WHOLEBODY": "WHOLEBODY",
    "HEAD+NECK": "HEADNECK",
    "NECK+CHEST": "NECKCHEST",
    "CHEST+ABDOMEN": "CHESTABDOMEN AORTA",
    "ABDOMEN+PELVIS": "ABDOMENPELVIS LOWERTRUNK",
    "CHEST+ABDOMEN+PELVIS": "CHESTABDPELVIS TRUNK",
    "NECK+CHEST+ABDOMEN": "NECKCHESTABDOMEN",
    "NECK+CHEST+ABDOMEN+PELVIS": "NECKCHESTABDPELV",
    "CSPINE+TSPINE": "CTSPINE",
    "TSPINE+LSPINE": "TLSPINE BACK",
    "LSPINE+SSPINE": "LSSPINE",
    SPINE: "SPINE",
    "CSPINE+TSPINE+LSPINE": "SPINALCORD",
    UPPER_LIMB: "UPPERLIMB",
    LOWER_LIMB: "LOWERLIMB",
    "THIGH+LEG": "GSV SAPHENOUSV",
    f"{UPPER_LIMB}+{LOWER_LIMB}": "EXTREMITY",
    f"PELVIS+{LOWER_LIMB}": "PELVISLOWEXTREMT",
}
"""Regions (``+``-joined) → the Annex L defined terms in them. Not listed, so in no region:
ARTERY, VEIN, LUMEN, ENDOARTERIAL, ENDOVASCULAR, ENDOVENOUS, ANTSPINALA, JOINT, CARDIOVASCSYS,
PHANTOM."""

_CID4031: dict[str, str] = {
    "FACE": "ParanasalSinus NasalBone FacialBones EyeRegion",
    "CHEST": "ApexOfLung",
    "CHEST+ABDOMEN": "EsophagusStomachAndDuodenum",
    "ABDOMEN": "LiverAndBiliaryStructure",
    "PELVIS": "Anus UterusAndFallopianTubes",
    "SSPINE": "SacroCoccygealSpine",
    "HIP": "Hip",
    "FOOT": "TarsalJoint",
    UPPER_LIMB: "BoneOfUpperLimb MuscleOfUpperLimb",
    LOWER_LIMB: "BoneOfLowerLimb MuscleOfLowerLimb",
    f"HEAD+{SPINE}": "VertebralColumnAndCranium",
}
"""Regions → CID 4031 members without a defined term (by pydicom keyword)."""

_LATIN: dict[str, str] = {
    "HEAD": "CRANIAL CRANIUM CEREBRAL PITUITARY",
    "FACE": "SINUS SINUSES ORBITS FACIAL TEMPORALBONE DENTAL TEETH",
    "CHEST": "LUNGS THORACIC PULMONARY",
    "HEART": "CARDIAC CORONARY CORONARIES",
    "BREAST": "BREASTS MAMMO MAMMOGRAPHY",
    "ABDOMEN": "ABD ABDOMINAL ABDO HEPATIC RENAL KIDNEYS",
    "PELVIS": "PELV PELVIC",
    "CSPINE": "CERVICAL CERVICALSPINE",
    "TSPINE": "THORACICSPINE DORSALSPINE",
    "LSPINE": "LUMBARSPINE",
    "SSPINE": "SACRUM SACRAL",
    "SHOULDER": "SHOULDERS",
    "ARM": "ARM ARMS",
    "ELBOW": "ELBOWS",
    "WRIST": "WRISTS",
    "HAND": "HANDS FINGERS",
    "HIP": "HIPS",
    "KNEE": "KNEES",
    "LEG": "LEG LEGS TIBFIB",
    "ANKLE": "ANKLES",
    "FOOT": "FEET TOES",
    "ABDOMEN+PELVIS": "ABDPELVIS",
    SPINE: "WHOLESPINE",
    UPPER_LIMB: "UPPEREXTREMITY",
    LOWER_LIMB: "LOWEREXTREMITY",
}
"""Regions → English words and joined phrases seen in descriptions, beyond the defined terms
(``THORACIC`` alone is the chest; ``THORACIC SPINE`` is joined first)."""

_CHINESE: dict[str, str] = {
    "HEAD": "头 头部 头颅 颅 颅脑 颅内 颅骨 脑 脑部 小脑 脑干 脑室 垂体 鞍区 蝶鞍 海马 头皮",
    "FACE": "颌面 颌面部 面部 颜面 面颅 颌 颌骨 上颌 下颌 眼 眼部 眼球 眶 眼眶 视神经 耳 内耳 中耳 "
    "乳突 颞骨 内听道 颞下颌关节 鼻 鼻骨 鼻腔 鼻窦 副鼻窦 鼻旁窦 口腔 牙 牙齿 舌 舌头 颧骨",
    "NECK": "颈 颈部 颈项 喉 喉部 咽 咽部 咽喉 鼻咽 鼻咽部 口咽 下咽 甲状腺 甲状旁腺 腮腺 颌下腺 "
    "锁骨上 颈动脉 椎动脉",
    "CHEST": "胸 胸部 胸廓 胸腔 胸壁 胸膜 胸片 肺 肺部 双肺 纵隔 气管 支气管 食管 食道 肋 肋骨 "
    "胸骨 胸主动脉 肺动脉",
    "HEART": "心脏 心肌 心包 心功能 冠脉 冠状动脉",
    "BREAST": "乳腺 乳房 双乳 乳头 腋窝 钼靶",
    "ABDOMEN": "腹 腹部 上腹 上腹部 中腹部 肝 肝脏 胆 胆囊 胆道 胆管 胰 胰腺 脾 脾脏 肾 肾脏 双肾 "
    "肾上腺 输尿管 胃 十二指肠 肠 小肠 结肠 大肠 阑尾 消化道 腹膜后 腹主动脉 门静脉",
    "PELVIS": "盆 盆腔 骨盆 膀胱 前列腺 精囊 子宫 子宫颈 宫颈 附件 卵巢 阴道 妇科 产科 胎儿 睾丸 "
    "阴囊 阴茎 直肠 肛门 肛周 会阴 臀 臀部 髂 髂骨 骶髂关节 腹股沟",
    "CSPINE": "颈椎 颈段 颈髓",
    "TSPINE": "胸椎 胸段 胸髓",
    "LSPINE": "腰 腰部 腰椎 腰段",
    "SSPINE": "骶 骶骨 骶椎 骶尾 骶尾椎 骶尾部 尾椎 尾骨",
    "SHOULDER": "肩 肩部 肩关节 肩胛 肩胛骨 锁骨 肩锁关节 胸锁关节 肱骨头",
    "ARM": "上臂 肱骨",
    "ELBOW": "肘 肘部 肘关节 桡骨头",
    "FOREARM": "前臂 尺骨 桡骨 尺桡骨",
    "WRIST": "腕 腕部 腕关节 手腕 舟骨",
    "HAND": "手部 手掌 双手 左手 右手 掌骨 手指 指骨 拇指",
    "HIP": "髋 髋部 髋关节 双髋 股骨头 股骨颈",
    "THIGH": "大腿 股骨",
    "KNEE": "膝 膝部 膝关节 双膝 髌 髌骨 腘窝",
    "LEG": "小腿 胫 胫骨 腓 腓骨 胫腓骨",
    "ANKLE": "踝 踝部 踝关节",
    "FOOT": "足 足部 双足 足舟骨 跟骨 跖 跖骨 趾 足趾",
    "WHOLEBODY": "全身",
    "CHEST+ABDOMEN": "主动脉 上消化道",
    "ABDOMEN+PELVIS": "全腹 全腹部 下腹 下腹部 泌尿系 尿路",
    "CSPINE+TSPINE": "颈胸椎 颈胸段",
    "TSPINE+LSPINE": "胸腰椎 胸腰段",
    "LSPINE+SSPINE": "腰骶 腰骶椎 腰骶部",
    SPINE: "脊柱 全脊柱 脊椎",
    "CSPINE+TSPINE+LSPINE": "脊髓",
    UPPER_LIMB: "上肢",
    LOWER_LIMB: "下肢",
    f"{UPPER_LIMB}+{LOWER_LIMB}": "四肢",
    "": "手术 骨头 椎体",
}
"""Regions → Chinese names and synonyms, read by longest match. The last row names no region:
those words are consumed so that their characters are not read alone (手术 is surgery, not the
hand)."""

_CODE = re.compile(r"^(?:(?:SCT|SNM|SRT)\s*[:^]\s*)?(\d{5,18})$")
_CJK = re.compile(r"[\u3400-\u9fff]+|[A-Z0-9]+")
MODALITY_WORDS = frozenset(
    {"CT", "CTA", "CTV", "CTU", "HRCT", "MR", "MRI", "MRA", "MRV", "MRCP", "DR", "CR", "DX"}
    | {"RG", "US", "MG", "PET", "PT", "NM", "SPECT", "ECT", "XA", "DSA", "RF", "OT", "SR"}
)
"""Latin words that name a modality, never a body part: they are not joined to their
neighbours (``CT SPINE`` is a CT of the spine, not ``CTSPINE``, the cervico-thoracic spine)."""


def _sets(table: dict[str, str]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for regions, names in table.items():
        value = frozenset(r for r in regions.split("+") if r)
        for name in names.split():
            if name in out:
                raise ValueError(f"{name!r} is listed twice")
            out[name] = value
    return out


BY_TERM: dict[str, frozenset[str]] = _sets(_TERMS)
"""Annex L defined term → regions."""
_BY_KEYWORD = _sets(_CID4031)
BY_CODE: dict[str, frozenset[str]] = {}
"""SNOMED CT code (CID 4031, Annex L) → regions."""
for _term, (_code, _meaning) in ANNEX_L.items():
    BY_CODE[_code] = BY_CODE.get(_code, EMPTY) | BY_TERM.get(_term, EMPTY)
for _code, (_keyword, _meaning) in CID4031_WITHOUT_TERM.items():
    BY_CODE[_code] = _BY_KEYWORD.get(_keyword, EMPTY)
_WORDS: dict[str, frozenset[str]] = {**BY_TERM, **_sets(_LATIN)}
_ZH = _sets(_CHINESE)
_ZH_LONGEST = max(len(k) for k in _ZH)


def regions_of(text: str | None) -> frozenset[str]:
    """The regions ``text`` names: a region code, a defined term, a CID 4031 code (optionally
    ``SCT:``-prefixed), or free text in Chinese and/or English. Empty when not understood."""
    if not text:
        return EMPTY
    return _regions(unicodedata.normalize("NFKC", text).strip().upper()[:256])


@lru_cache(maxsize=8192)
def _regions(value: str) -> frozenset[str]:
    if value in REGIONS:
        return frozenset({value})
    if value in BY_TERM:
        return BY_TERM[value]
    code = _CODE.match(value)
    if code is not None:
        return BY_CODE.get(code.group(1), EMPTY)
    found: set[str] = set()
    words: list[str] = []
    for piece in _CJK.findall(value):
        if piece[0].isascii():
            words.append(piece)
            continue
        found |= _latin(words)
        words = []
        found |= _chinese(piece)
    found |= _latin(words)
    return frozenset(found)


def _chinese(run: str) -> set[str]:
    found: set[str] = set()
    i = 0
    while i < len(run):
        for n in range(min(_ZH_LONGEST, len(run) - i), 0, -1):
            hit = _ZH.get(run[i : i + n])
            if hit is not None:
                found |= hit
                i += n
                break
        else:
            i += 1
    return found


def _latin(words: list[str]) -> set[str]:
    """Words of one Latin run: three or two neighbours joined first (``T L SPINE``), then
    each alone; a modality word is never joined."""
    found: set[str] = set()
    i = 0
    while i < len(words):
        for n in (3, 2, 1):
            group = words[i : i + n]
            if len(group) < n or (n > 1 and MODALITY_WORDS & set(group)):
                continue
            hit = _WORDS.get("".join(group))
            if hit is not None:
                found |= hit
                i += n
                break
        else:
            i += 1
    return found


def region_names(regions: frozenset[str] | set[str], lang: str = "zh") -> str:
    """``胸部、腹部`` / ``Chest, Abdomen``, in the vocabulary's head-to-foot order."""
    index = 1 if lang == "en" else 0
    names = [REGIONS[r][index] for r in REGIONS if r in regions]
    return (", " if lang == "en" else "、").join(names)
